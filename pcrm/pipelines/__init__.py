"""Pipelines: the library calls behind the commands (data -> constraints -> trainer -> saved model -> metrics)."""
