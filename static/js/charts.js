/* Chart pages (costs, delivery metrics): draw each figure the server built
 * with plotly.
 *
 * Every chart container names, in data-figure, the json_script element that
 * holds its figure ({data, layout}); plotly.js is the local vendor copy.
 */
(function () {
  "use strict";

  if (typeof Plotly === "undefined") {
    return;
  }
  document.querySelectorAll("[data-figure]").forEach(function (container) {
    var source = document.getElementById(container.dataset.figure);
    if (!source) {
      return;
    }
    var figure = JSON.parse(source.textContent);
    Plotly.newPlot(container, figure.data, figure.layout, {
      displaylogo: false,
      responsive: true,
    }).then(function () {
      container.dataset.rendered = "true"; // for tests and print styles
    });
  });
})();
