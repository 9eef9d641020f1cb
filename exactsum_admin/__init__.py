"""Operator tools, apart from what the services speak: ``python -m exactsum_admin`` (dead
letters, audit) and ``python -m exactsum_admin.acl`` (the Redis ACL file)."""
