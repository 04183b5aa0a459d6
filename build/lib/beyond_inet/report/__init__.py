"""Report: the tidy results table (SQLite + CSV/JSON) and the HTML/Markdown report."""
