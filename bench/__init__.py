"""connbench: does an RNN need full hidden-to-hidden structure?"""
__version__ = "0.1.0"
