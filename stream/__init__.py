"""The streaming side: the Faust app and agent, batch processing, and the sinks that write results."""
