"""The worker process: imports its handler after fork and consumes one queue."""
