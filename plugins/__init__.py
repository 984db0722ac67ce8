"""First-party MacPool plugins (loaded through the ``macpool.plugins`` entry points)."""
