"""The LangGraph graphs: the editing loop and its builders for subgraph use."""

from graphs.editing import GRAPH_NAME, Components, build_graph, components_from

__all__ = ["GRAPH_NAME", "Components", "build_graph", "components_from"]
