/* The exchange table (docs/EXCHANGES.md 11.1): one X-macro row per exchange, from which
 * the enum codes, the config's names and the properties the dispatch reads follow, as the
 * method tables of methods.h.  Each backend keeps its own array of calls in the table's
 * order (src/host.c).  Adding an exchange: one row here, one file per backend. */
#ifndef SPARCCL_EXCHANGES_H_
#define SPARCCL_EXCHANGES_H_

/* Exchange properties. */
#define SPARCCL_X_ALLTOALL 1u       /* moves data by an alltoall */
#define SPARCCL_X_EF21 2u           /* supports ef21 */
#define SPARCCL_X_SHARDED 4u        /* state per shard: needs the node topology (11.2) */

/*        code                           name            properties                         */
#define SPARCCL_EXCHANGE_TABLE(X)                                                           \
  X(SPARCCL_EXCHANGE_ALLGATHER,    0, "allgather",    SPARCCL_X_EF21)                       \
  X(SPARCCL_EXCHANGE_HIERARCHICAL, 1, "hierarchical", SPARCCL_X_EF21 | SPARCCL_X_ALLTOALL | SPARCCL_X_SHARDED) \
  X(SPARCCL_EXCHANGE_SPLIT,        2, "split",        SPARCCL_X_ALLTOALL)

#define SPARCCL_EXCHANGE_ENUM(code, value, name, props) code = value,
enum { SPARCCL_EXCHANGE_TABLE(SPARCCL_EXCHANGE_ENUM) SPARCCL_NUM_EXCHANGES };
#undef SPARCCL_EXCHANGE_ENUM

static inline unsigned sparccl_exchange_props(int exchange) {
#define SPARCCL_EXCHANGE_CASE(code, value, name, props) case code: return props;
  switch (exchange) { SPARCCL_EXCHANGE_TABLE(SPARCCL_EXCHANGE_CASE) }
#undef SPARCCL_EXCHANGE_CASE
  return 0u;
}

static inline const char* sparccl_exchange_name(int exchange) {
#define SPARCCL_EXCHANGE_CASE(code, value, name, props) case code: return name;
  switch (exchange) { SPARCCL_EXCHANGE_TABLE(SPARCCL_EXCHANGE_CASE) }
#undef SPARCCL_EXCHANGE_CASE
  return "unknown";
}

static inline int sparccl_exchange_sharded(int exchange) {
  return (sparccl_exchange_props(exchange) & SPARCCL_X_SHARDED) != 0;
}

#endif /* SPARCCL_EXCHANGES_H_ */
