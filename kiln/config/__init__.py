"""Settings (KILN_* variables), the error hierarchy and the defaults the launcher reads before
pydantic.
"""
