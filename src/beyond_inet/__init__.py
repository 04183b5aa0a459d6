"""beyond-inet: how pretrained vision models behave beyond ImageNet accuracy.

Pipeline: models -> data -> engine (plan, infer, store) -> analyses -> report.
"""

__version__ = "0.1.0"
ENGINE_VERSION = "1"  # bump when stored outputs would change for the same key
