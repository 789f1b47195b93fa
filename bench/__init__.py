"""connbench: does an RNN need full hidden-to-hidden connectivity?"""
__version__ = "0.1.0"
