"""The producer service: pushes numbers onto the Redis queue and reports the verified sum."""
