"""The ground every package may import: the project's exception types and exit codes
(`errors`), atomic file writes and hashing (`files`), command-line pieces and the one edge
where errors become exit codes (`argtypes`), and the one logging setup (`logs`). It imports
nothing of the project's other packages."""
