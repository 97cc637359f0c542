// A snapshot still in progress: reload until the collector has finished it.
setTimeout(function () { location.reload(); }, 2000);
