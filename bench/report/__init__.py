"""Rendering of results for people: terminal tables (HTML and CI formats come later)."""
