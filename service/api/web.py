"""Routes for web (being written)."""

from fastapi import APIRouter

router = APIRouter()
