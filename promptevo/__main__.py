import os
import sys

from promptevo.interrupts import install

install()  # before the heavier imports: a Ctrl-C at any moment ends with one clean line
try:
    from promptevo.cli.main import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted; finished work is saved\n")
    sys.stderr.flush()
    os._exit(130)  # nothing is open yet; an exit that cannot be turned back into a SIGINT death

main()
