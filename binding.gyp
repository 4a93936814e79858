{
  # The native addon: build/Release/overlayd.node. Plain Node-API C (native/binding.c) over
  # the C core in native/src (every .c file there, so new core files need no edit here).
  "targets": [
    {
      "target_name": "overlayd",
      "sources": [
        "native/binding.c",
        "<!@(node -p \"require('fs').readdirSync('native/src').filter(f => f.endsWith('.c')).sort().map(f => 'native/src/' + f).join(' ')\")"
      ],
      "include_dirs": ["native/include"],
      "defines": ["NAPI_VERSION=8"],
      "cflags!": ["-O3", "-Wno-unused-parameter"],
      "cflags_c": ["-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"],
      "ldflags": ["-pthread"],
      "configurations": {
        "Release": { "cflags!": ["-O3"] }
      }
    }
  ]
}
