// orders takes orders for the example shop: it reserves stock, charges the customer
// through the ledger and keeps the order book. Hidden bug: placing an order locks the
// stock, then the order book; cancelling locks the order book, then the stock. Each
// holds its first lock across a ledger call, so a cancel racing a new order deadlocks,
// and every later request that touches either lock queues up behind them.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
)

type order struct {
	ID       int    `json:"id"`
	Customer string `json:"customer"`
	Item     string `json:"item"`
	Qty      int    `json:"qty"`
	Status   string `json:"status"`
}

type stock struct {
	mu     sync.Mutex
	levels map[string]int
}

type book struct {
	mu     sync.Mutex
	orders map[int]*order
	nextID int
}

type service struct {
	stock     *stock
	book      *book
	ledgerURL string
	prices    map[string]int64
}

func (s *service) ledger(path, customer string, amount int64) error {
	body, _ := json.Marshal(map[string]any{"customer": customer, "amount": amount})
	resp, err := http.Post(s.ledgerURL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ledger %s: %s", path, resp.Status)
	}
	return nil
}

// place: stock lock -> ledger call -> book lock.
func (s *service) place(o *order) (*order, error) {
	s.stock.mu.Lock()
	defer s.stock.mu.Unlock()
	if s.stock.levels[o.Item] < o.Qty {
		return nil, fmt.Errorf("out of %s", o.Item)
	}
	if err := s.ledger("/reserve", o.Customer, s.prices[o.Item]*int64(o.Qty)); err != nil {
		return nil, err
	}
	s.stock.levels[o.Item] -= o.Qty
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	s.book.nextID++
	o.ID, o.Status = s.book.nextID, "placed"
	s.book.orders[o.ID] = o
	return o, nil
}

// cancel: book lock -> ledger call -> stock lock (the inverse order of place).
func (s *service) cancel(id int) (*order, error) {
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	o, ok := s.book.orders[id]
	if !ok || o.Status != "placed" {
		return nil, fmt.Errorf("no open order %d", id)
	}
	if err := s.ledger("/refund", o.Customer, s.prices[o.Item]*int64(o.Qty)); err != nil {
		return nil, err
	}
	s.stock.mu.Lock()
	defer s.stock.mu.Unlock()
	s.stock.levels[o.Item] += o.Qty
	o.Status = "cancelled"
	return o, nil
}

func (s *service) list() []order {
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	out := make([]order, 0, len(s.book.orders))
	for i := 1; i <= s.book.nextID; i++ {
		if o, ok := s.book.orders[i]; ok {
			out = append(out, *o)
		}
	}
	return out
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

func (s *service) orders(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		reply(w, s.list(), nil)
	case http.MethodPost:
		var o order
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Qty <= 0 {
			http.Error(w, "want {customer, item, qty > 0}", http.StatusBadRequest)
			return
		}
		placed, err := s.place(&o)
		reply(w, placed, err)
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

func (s *service) cancelHandler(w http.ResponseWriter, r *http.Request) {
	var id int
	if _, err := fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/orders/cancel/"), "%d", &id); err != nil {
		http.Error(w, "want /orders/cancel/<id>", http.StatusBadRequest)
		return
	}
	o, err := s.cancel(id)
	reply(w, o, err)
}

func main() {
	s := &service{
		stock:     &stock{levels: map[string]int{"teapot": 20, "kettle": 20}},
		book:      &book{orders: map[int]*order{}},
		ledgerURL: strings.TrimRight(os.Getenv("LEDGER_URL"), "/"),
		prices:    map[string]int64{"teapot": 30, "kettle": 45},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/orders", s.orders)
	mux.HandleFunc("/orders/cancel/", s.cancelHandler)
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = ":8080"
	}
	log.Printf("orders listening on %s (ledger %s)", addr, s.ledgerURL)
	log.Fatal(http.ListenAndServe(addr, mux))
}
