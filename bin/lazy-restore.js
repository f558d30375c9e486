#!/usr/bin/env node
import '../dist/plugin/cli/main.js';
