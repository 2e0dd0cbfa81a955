"""The sample process library: real .proc files, each with its scenarios."""
