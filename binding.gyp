{
  "targets": [
    {
      "target_name": "lazy_restore",
      "sources": [
        "<!@(ls -1 native/common/*.cc native/uffd/*.cc native/engine/*.cc native/inject/*.cc native/rpc/*.cc native/net/*.cc native/ns/*.cc native/ipc/*.cc 2>/dev/null)"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
