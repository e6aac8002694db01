// ledger keeps customer balances for the example shop. Reservations and refunds take a
// configurable time (LEDGER_LATENCY, default 150ms), like a payment provider would.
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"sync"
	"time"
)

type ledger struct {
	mu       sync.Mutex
	balances map[string]int64
	latency  time.Duration
}

type movement struct {
	Customer string `json:"customer"`
	Amount   int64  `json:"amount"`
}

func (l *ledger) apply(m movement, sign int64) (int64, bool) {
	time.Sleep(l.latency) // the payment provider's round trip
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.balances[m.Customer] + sign*m.Amount
	if next < 0 {
		return l.balances[m.Customer], false
	}
	l.balances[m.Customer] = next
	return next, true
}

func (l *ledger) handler(sign int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var m movement
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m.Amount <= 0 {
			http.Error(w, "want {customer, amount > 0}", http.StatusBadRequest)
			return
		}
		balance, ok := l.apply(m, sign)
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusPaymentRequired)
		}
		json.NewEncoder(w).Encode(map[string]any{"customer": m.Customer, "balance": balance, "ok": ok})
	}
}

func main() {
	latency, err := time.ParseDuration(os.Getenv("LEDGER_LATENCY"))
	if err != nil {
		latency = 150 * time.Millisecond
	}
	l := &ledger{balances: map[string]int64{"ada": 1000, "grace": 1000}, latency: latency}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/reserve", l.handler(-1))
	mux.HandleFunc("/refund", l.handler(+1))
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = ":8080"
	}
	log.Printf("ledger listening on %s (latency %s)", addr, latency)
	log.Fatal(http.ListenAndServe(addr, mux))
}
