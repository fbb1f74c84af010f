"""Reproduce the bugs on this installation: real servers, real sockets, 127.0.0.1.

``keepalive-guard verify`` (see ``runner``) and the project's tests share
this machinery: ``app`` (what the servers serve), ``serve`` (a server
process), ``server`` (starting and stopping one), ``client`` (a raw HTTP/1.1
client) and ``scenarios`` (one reproduction per bug).  Nothing here is
imported by the guard itself.
"""
