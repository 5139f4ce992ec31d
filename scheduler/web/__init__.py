"""The scheduler's read-only web view of the cluster (`--web-listen`): docs/webview.md.

Imported only when the flag is given, so a scheduler without it loads none
of http.server or ssl for it.
"""
