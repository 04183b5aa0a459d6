"""Rewrite src/beyond_inet/model_names.json from the installed timm and open_clip (and the package's own
aliases and packaged models). Run after upgrading timm or open_clip_torch, then commit the file:

    python scripts/refresh_model_index.py

Why the file exists: see `beyond_inet.model_names` (names without importing torch)."""
from __future__ import annotations

import json

from beyond_inet import model_names
from beyond_inet.models import ALIASES
from beyond_inet.models.packaged import PACKAGED


def main() -> None:
    live = model_names.build_live(dict(ALIASES), {n: v[2] for n, v in PACKAGED.items()})
    model_names.SHIPPED.write_text(json.dumps(live.to_json(), indent=0) + "\n")
    print(f"{model_names.SHIPPED}: timm {live.timm_version} ({len(live.timm_pretrained)} pretrained, "
          f"{len(live.timm_archs)} archs), open_clip {live.open_clip_version} "
          f"({len(live.open_clip_pretrained)} pretrained)")


if __name__ == "__main__":
    main()
