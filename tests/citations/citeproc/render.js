// Renders CSL-JSON items with citeproc-js (the CSL processor of Zotero and Mendeley).
// Input on stdin: {"items": [...], "locales_dir": "...", "jobs": [{"style": "<path>", "locale": "en-US",
// "format": "text" | "html"}]}. Output on stdout: one list of bibliography entries per job, in the
// processor's bibliography order, as {"ids": [...], "entries": [...]}.
"use strict";
const fs = require("fs");
const path = require("path");
const CSL = require("citeproc");

const input = JSON.parse(fs.readFileSync(0, "utf8"));
const byId = new Map(input.items.map((item) => [item.id, item]));

const sys = {
  retrieveLocale(lang) {
    const file = path.join(input.locales_dir, `locales-${lang}.xml`);
    return fs.existsSync(file) ? fs.readFileSync(file, "utf8") : false;
  },
  retrieveItem(id) {
    return byId.get(id);
  },
};

const results = input.jobs.map((job) => {
  const engine = new CSL.Engine(sys, fs.readFileSync(job.style, "utf8"), job.locale, true);
  engine.setOutputFormat(job.format);
  engine.updateItems(input.items.map((item) => item.id));
  const [params, entries] = engine.makeBibliography();
  return { ids: params.entry_ids.map((ids) => ids[0]), entries };
});
process.stdout.write(JSON.stringify(results));
