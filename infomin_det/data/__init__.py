"""Datasets the toolkit builds itself: tiny generated sets for tests, composites of real photos for the demo."""
