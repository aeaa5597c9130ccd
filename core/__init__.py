"""The bottom floor: settings, the user-error type and small helpers. Imports nothing of the project."""
