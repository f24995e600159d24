package conformance

import (
	"io"
	"net/http"
	"runtime"
)

// ServeHTTP runs h as a net/http handler, for harnesses of adapters built
// on net/http: it reads the body, calls Serve with the request's context
// and carries out the Step. Panic panics; Goexit calls runtime.Goexit;
// Hijack writes HijackedResponse on the hijacked connection and closes it;
// Flush flushes through http.ResponseController. net/http handlers return
// no error, so Fail answers 500: a harness whose framework renders handler
// errors carries out Fail with its own handler type instead. net/http has
// no JSON responder: JSON sets Content-Type application/json, then the
// status, then writes Body. net/http sends the header with WriteHeader, so
// the client never sees the Late fields.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	step := h.Serve(r.Context(), body)
	switch {
	case step.Panic:
		panic("conformance: scripted panic")
	case step.Goexit:
		runtime.Goexit()
	case step.Fail:
		http.Error(w, ErrScripted.Error(), http.StatusInternalServerError)
		return
	case step.Hijack:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(conn, HijackedResponse)
		_ = conn.Close()
		return
	}
	for _, f := range step.Header {
		w.Header().Add(f.Name, f.Value)
	}
	if step.JSON {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(step.Status)
	for _, f := range step.Late {
		w.Header().Add(f.Name, f.Value)
	}
	switch {
	case len(step.Body) == 0:
	case step.Flush:
		half := len(step.Body) / 2
		_, _ = w.Write(step.Body[:half])
		_ = http.NewResponseController(w).Flush()
		_, _ = w.Write(step.Body[half:])
	default:
		_, _ = w.Write(step.Body)
	}
}
