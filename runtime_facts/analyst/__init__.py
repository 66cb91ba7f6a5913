"""Analysts' side: offline SQL views, the interactive shell, the HTML report and its charts."""
