-- usersync.status_css: the status page's style sheet, compiled into the
-- binary with the Lua library and served at /status/style.css (the page's
-- Content-Security-Policy allows style sheets from the server only).
-- System fonts, no images; colours meet WCAG AA contrast on white; tables
-- turn into stacked cards below 40em, so nothing is wider than a phone.
return [[
:root{--fg:#1b1f24;--muted:#4f5660;--line:#d0d5dc;--bg:#fff;--soft:#f4f6f8;--link:#0b57d0;
--ok:#0a6b2e;--okbg:#e6f4ea;--bad:#a3120f;--badbg:#fce8e6;--warn:#7a4b00;--warnbg:#fef3d7;--focus:#0b57d0}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
a{color:var(--link)}
a:hover{text-decoration-thickness:2px}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:var(--bg);padding:.5em 1em}
.skip:focus{left:0;z-index:1}
header.top{background:#16324f;color:#fff;padding:.75em 1em}
header.top a{color:#fff}
header.top h1{margin:0;font-size:1.35em}
header.top p{margin:.2em 0 0;font-size:.9em;color:#dfe7ef}
main{max-width:75em;margin:0 auto;padding:0 1em 2em}
h2{font-size:1.2em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:2px solid var(--line)}
h3{font-size:1.05em;margin:0 0 .4em}
p,li,dd{overflow-wrap:anywhere}
td,th{overflow-wrap:break-word}
.muted{color:var(--muted)}
.notice{border-left:4px solid var(--link);background:var(--soft);padding:.5em .75em;margin:1em 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,22em),1fr));gap:1em}
.card{border:1px solid var(--line);border-radius:6px;padding:.75em 1em;background:var(--bg);min-width:0}
dl.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15em .75em;margin:0 0 .75em}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;min-width:0}
.badge{display:inline-block;padding:0 .45em;border-radius:3px;font-size:.85em;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.b-ok,.b-done,.b-accepted{color:var(--ok);background:var(--okbg)}
.b-failed,.b-partial,.b-interrupted{color:var(--bad);background:var(--badbg)}
.b-stopped,.b-running,.b-skipped,.b-pending,.b-withheld,.b-conflict,.b-unread{color:var(--warn);background:var(--warnbg)}
.b-policy_error,.b-unauthorized,.b-malformed,.b-too_large,.b-queue_full{color:var(--bad);background:var(--badbg)}
table{border-collapse:collapse;width:100%;margin:.25em 0 1em;font-size:.95em}
caption{text-align:left;color:var(--muted);padding:.25em 0}
th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
form{margin:.5em 0 0}
form.row{display:flex;flex-wrap:wrap;gap:.5em;align-items:flex-end}
label{display:block;font-size:.9em;color:var(--muted)}
.field{flex:1 1 12em;min-width:0}
input[type=text]{width:100%;font:inherit;padding:.35em .5em;border:1px solid #6b7380;border-radius:4px;min-height:44px}
button{font:inherit;font-weight:600;padding:.4em .9em;min-height:44px;border-radius:4px;border:1px solid #0b57d0;
background:#0b57d0;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#0b57d0}
button:hover{background:#0842a0;color:#fff}
progress{width:100%;height:1em}
.phase{margin:.35em 0}
footer{max-width:75em;margin:0 auto;padding:1em;color:var(--muted);font-size:.9em;border-top:1px solid var(--line)}
@media (max-width:40em){
 body{font-size:15px}
 table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
 table.stack thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
 table.stack tr{border:1px solid var(--line);border-radius:6px;margin:0 0 .6em;padding:.25em .5em}
 table.stack caption{display:block}
 table.stack td{border:0;padding:.15em 0;text-align:left;overflow-wrap:anywhere}
 table.stack td.num{text-align:left}
 table.stack td::before{content:attr(data-label);display:inline-block;min-width:7.5em;color:var(--muted);font-weight:600;padding-right:.5em}
 dl.facts{grid-template-columns:minmax(0,1fr)}
 dl.facts dd{margin-bottom:.3em}
}
]]
