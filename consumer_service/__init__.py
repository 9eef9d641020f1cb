"""The consumer service: claims batches from the Redis queue and commits them exactly once."""
