"""What people look at: charts (matplotlib) and the one-study HTML page."""
