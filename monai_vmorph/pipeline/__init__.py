"""Native-space registration: scans as they come from the scanner, registered and written back on their own grids.

The one pipeline that the command line, the bundles' inference writer and the benchmarks adapt (see the project's
design notes): native scan reader -> affine pre-alignment -> network grid -> network (and refinement) -> one
displacement field on the fixed scan's native grid -> one all-or-nothing writer.
"""
