"""The fault harness: the real pipeline under worker kills, restarts and SES faults (marker ``faults``)."""
