"""Internet sources the daemon fetches on its own: market prices and PV forecasts.

Pure parts (``base``, ``prices``, ``pv``): which requests to make and what a response means.
The fetcher (``fetcher``) does the HTTP, the schedule, retries, the disk cache and failover.
"""
