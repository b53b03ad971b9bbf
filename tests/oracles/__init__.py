"""Oracle tests: each check run on this machine, its facts compared with an independent tool's."""
