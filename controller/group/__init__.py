"""The group: the controllers that share one database (docs/web-nodes.md).

* ``membership``  this controller's row (registered, heartbeated, forgotten at a clean
  stop) and the leases that make a group-wide job run on one controller only
"""
