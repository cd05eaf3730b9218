"""ernie: on which cloud and accelerator does my model train fastest and cheapest, and how do I serve it?"""

__version__ = "0.1.0"
