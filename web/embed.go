// Package web serves ferry's browser page: a TypeScript page (src/) that
// uploads files with UploadService's unary chunk RPCs over gRPC-Web, and
// lists, downloads and deletes objects. Browsers cannot stream request
// bodies, so the page sends one chunk per PutChunk call, several at once.
//
// The page is built with esbuild (scripts/web.sh, from src/ and the
// TypeScript that scripts/gen-proto.sh generates into src/gen/) into dist/,
// which is committed and embedded into the ferry binary here: serving the
// page needs no Node.js. CI rebuilds dist/ and fails when it differs from
// what is committed (bash scripts/web.sh --check).
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed dist
var dist embed.FS

// Assets returns the built page: index.html, app.js, crc-worker.js and
// style.css at its root.
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		// dist is embedded at build time; fs.Sub fails only on a bad name.
		panic(err)
	}
	return sub
}

// contentSecurityPolicy lets the page load only its own scripts (and
// compile the WebAssembly of its CRC32C library), while its RPCs may go to
// any HTTP(S) origin: a person may point the page at another ferry server,
// whose own CORS settings then decide.
const contentSecurityPolicy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; " +
	"connect-src 'self' http: https:; img-src 'self' data: blob:; object-src 'none'; " +
	"base-uri 'none'; frame-ancestors 'none'; form-action 'none'"

// Handler returns an http.Handler that serves the page's files for GET and
// HEAD requests, index.html for "/", and 405 Method Not Allowed for other
// methods. Responses carry Cache-Control: no-cache (the browser revalidates
// against the embedded files' fixed modification time, so a new binary's
// page is picked up at once), a Content-Security-Policy, and
// X-Content-Type-Options: nosniff. Mount it at "/" beside the RPC handlers:
// their paths are more specific patterns.
func Handler() http.Handler {
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}
