/* The parameter table (src/config.c) against README.md's configuration table: every field
 * has its row, with its environment variable, its default and (enums) every accepted name;
 * every row names a field of the table.  The test runs from the repository's root. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "core.h"

/* The README's rows "| field | VARIABLE | default | meaning |", split into cells. */
typedef struct { char field[64], env[64], def[64], meaning[512]; } row_t;

static void trim(char* s) {
  char* a = s;
  size_t n;
  while (*a == ' ') a++;
  memmove(s, a, strlen(a) + 1);
  n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n')) s[--n] = '\0';
}

static size_t readRows(row_t* rows, size_t cap) {
  FILE* f = fopen("README.md", "r");
  char line[1024];
  size_t n = 0;
  ck_assert_msg(f != NULL, "README.md not found: run the unit suite from the repository root");
  while (fgets(line, sizeof(line), f) != NULL && n < cap) {
    char* cells[4];
    char* p = line;
    int c;
    if (strncmp(line, "| ", 2) != 0 || strstr(line, "SPARCCL_") == NULL) continue;
    for (c = 0; c < 4; c++) {
      p = strchr(p, '|');
      if (p == NULL) break;
      cells[c] = ++p;
    }
    if (c < 4 || strncmp(cells[1], " SPARCCL_", 9) != 0) continue;
    for (c = 0; c < 4; c++) *strchr(cells[c], '|') = '\0';
    snprintf(rows[n].field, sizeof(rows[n].field), "%s", cells[0]);
    snprintf(rows[n].env, sizeof(rows[n].env), "%s", cells[1]);
    snprintf(rows[n].def, sizeof(rows[n].def), "%s", cells[2]);
    snprintf(rows[n].meaning, sizeof(rows[n].meaning), "%s", cells[3]);
    trim(rows[n].field); trim(rows[n].env); trim(rows[n].def); trim(rows[n].meaning);
    n++;
  }
  fclose(f);
  return n;
}

/* The default as the README writes it: an enum's name, otherwise the number (%g). */
static void defaultText(const sparcclParam_t* p, char* out, size_t n) {
  if (p->kind == PARAM_ENUM) snprintf(out, n, "%s", p->names[(int)p->byDefault]);
  else snprintf(out, n, "%g", p->byDefault);
}

START_TEST(test_readme_matches_parameter_table) {
  static row_t rows[64];
  size_t nrows = readRows(rows, 64), nparams, i, j;
  const sparcclParam_t* params = sparcclParams(&nparams);
  ck_assert_uint_ge(nrows, nparams);
  for (i = 0; i < nparams; i++) {
    const sparcclParam_t* p = &params[i];
    const row_t* row = NULL;
    char def[64];
    for (j = 0; j < nrows; j++)
      if (strcmp(rows[j].field, p->field) == 0) row = &rows[j];
    ck_assert_msg(row != NULL, "README.md has no row for config.%s", p->field);
    ck_assert_msg(strcmp(row->env, p->env) == 0, "config.%s: README says %s, the table %s",
                  p->field, row->env, p->env);
    defaultText(p, def, sizeof(def));
    ck_assert_msg(strncmp(row->def, def, strlen(def)) == 0 &&
                      (row->def[strlen(def)] == '\0' || row->def[strlen(def)] == ' '),
                  "config.%s: README's default \"%s\", the table's %s", p->field, row->def, def);
    for (j = 0; p->kind == PARAM_ENUM && j < (size_t)p->nnames; j++)
      ck_assert_msg(strstr(row->meaning, p->names[j]) != NULL || strstr(row->def, p->names[j]),
                    "config.%s: README does not list \"%s\"", p->field, p->names[j]);
  }
  for (j = 0; j < nrows; j++) { /* rows of the preload's variables have no config field */
    int known = strncmp(rows[j].env, "SPARCCL_PRELOAD_", 16) == 0;
    for (i = 0; i < nparams; i++) known |= strcmp(rows[j].field, params[i].field) == 0;
    ck_assert_msg(known, "README.md's row %s (%s) is not a config field", rows[j].field, rows[j].env);
  }
}
END_TEST

Suite* make_config_suite(void) {
  Suite* s = suite_create("config");
  TCase* tc = tcase_create("parameter table");
  tcase_add_test(tc, test_readme_matches_parameter_table);
  suite_add_tcase(s, tc);
  return s;
}
