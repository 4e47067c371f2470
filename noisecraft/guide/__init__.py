"""The guidance layer: wrappers that turn a denoise function into another (DESIGN.md section 2).

Classifier-free and classifier guidance, the noisy classifier, text prompts, linear measurements and the
inverse-problem methods. Built on core and solvers; knows no run directory and no CLI.
"""
