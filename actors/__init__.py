"""Actors: one package per resource kind, plus the actor base and the error tree."""
