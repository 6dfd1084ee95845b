"""Threads, tools, billing, providers, jobs and settings."""

from __future__ import annotations

from fastapi import APIRouter

from api.dashboard.render import DashboardRoute

router = APIRouter(route_class=DashboardRoute)
