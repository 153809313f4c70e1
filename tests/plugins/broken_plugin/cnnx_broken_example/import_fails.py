raise RuntimeError("this plugin module crashes on import")
