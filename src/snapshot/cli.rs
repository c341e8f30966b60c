//! `pikachu snapshot start|status|cancel` (placeholder).
