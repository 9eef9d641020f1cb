"""What the producer and the consumer services both speak: key names, the wire format, the Lua
scripts, the Redis connection with its retry loop, options, logging and signal set-up."""
