"""tracekit's version, in a module of its own: every module that records it imports this, not the
package (whose API functions import the engine).
"""

__version__ = "0.1.0"
