"""The master process: loop, programs, commands. Imports no application code."""
