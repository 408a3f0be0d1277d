"""The monitoring app's pages: the Overview, the errors pages, the alerts pages, and the endpoints for
machines (/healthz, /metrics). Thin: read the input, call one domain function, render."""
