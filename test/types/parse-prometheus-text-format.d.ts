declare module 'parse-prometheus-text-format' {
  interface Sample { value?: string; labels?: Record<string, string>; buckets?: Record<string, string> }
  interface MetricFamily { name: string; help: string; type: string; metrics: Sample[] }
  function parsePrometheusTextFormat(text: string): MetricFamily[];
  export default parsePrometheusTextFormat;
}
