import sys

sys.exit("this plugin exits on import")
