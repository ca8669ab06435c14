"""Routes for ops (being written)."""

from fastapi import APIRouter

router = APIRouter()
