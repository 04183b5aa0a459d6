"""Data: dataset catalog, readers for on-disk layouts, label spaces and views."""
