package io.crossinfer;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Keyed models: the spec's {@code keyed} node. Each element is routed by its key field to the
 * model of the route listing that key; keys no route lists go to the default model, or come back
 * in {@link InferenceResult#failures()} when there is none.
 *
 * <p>At most {@link #withMaxModelsPerWorker(int) maxModelsPerWorker} models are resident per
 * worker process; elements of one model are grouped before inference, so a bound below the number
 * of models does not thrash (unlike Beam's {@code KeyedModelHandler}).
 *
 * <p>Each route's elements are grouped into {@link #withShards(int) shards} (default 16 when every
 * model fits {@code maxModelsPerWorker}, else 1), so one busy route's work spreads over up to that
 * many workers, and a worker process still loads a route's model at most once.
 *
 * <pre>{@code
 * Keyed keyed = Keyed.of("by_team",
 *         Keyed.route(lr, "sklearn"),
 *         Keyed.route(mlp, "torch", "pytorch"))
 *     .withDefault(lr2)
 *     .withMaxModelsPerWorker(2)
 *     .withKeyField("team")
 *     .withExpansionService("localhost:8097");
 * }</pre>
 */
public final class Keyed extends InferenceTransform<Keyed> {
  private static final long serialVersionUID = 1L;

  /** The most shards a route may have (the spec's bound on {@code shards}). */
  public static final int MAX_SHARDS = 1024;

  /** Keys that share one model. */
  public static final class Route implements Serializable {
    private static final long serialVersionUID = 1L;

    private final List<String> keys;
    private final Model model;

    private Route(List<String> keys, Model model) {
      this.keys = keys;
      this.model = model;
    }

    /** Route elements whose key is one of {@code keys} (at least one) to {@code model}. */
    public static Route of(Model model, String... keys) {
      return of(model, keys == null ? null : List.of(keys));
    }

    /** Route elements whose key is one of {@code keys} (at least one) to {@code model}. */
    public static Route of(Model model, List<String> keys) {
      if (model == null) {
        throw new IllegalArgumentException("Keyed.Route.of: model must not be null");
      }
      if (keys == null || keys.isEmpty()) {
        throw new IllegalArgumentException(
            "Keyed.Route.of: the route to '" + model.name() + "' needs at least one key");
      }
      for (String key : keys) {
        if (key == null) {
          throw new IllegalArgumentException(
              "Keyed.Route.of: the route to '" + model.name() + "' has a null key");
        }
      }
      return new Route(List.copyOf(keys), model);
    }

    /** The keys. */
    public List<String> keys() {
      return keys;
    }

    /** The model they share. */
    public Model model() {
      return model;
    }
  }

  private final String name;
  private final List<Route> routes;
  private final @Nullable Model defaultModel;
  private final @Nullable Integer maxModelsPerWorker;
  private final @Nullable Integer shards;

  private Keyed(
      String name,
      List<Route> routes,
      @Nullable Model defaultModel,
      @Nullable Integer maxModelsPerWorker,
      @Nullable Integer shards,
      Io io) {
    super(io);
    this.name = name;
    this.routes = routes;
    this.defaultModel = defaultModel;
    this.maxModelsPerWorker = maxModelsPerWorker;
    this.shards = shards;
  }

  /** A keyed router over {@code routes} (add more with {@link #withRoute}). */
  public static Keyed of(String name, Route... routes) {
    requireName(name, "Keyed.of name");
    if (routes == null) {
      throw new IllegalArgumentException("Keyed.of: routes must not be null");
    }
    for (int i = 0; i < routes.length; i++) {
      if (routes[i] == null) {
        throw new IllegalArgumentException("Keyed.of: route " + i + " is null");
      }
    }
    return new Keyed(name, List.of(routes), null, null, null, Io.DEFAULT);
  }

  /** Shorthand for {@link Route#of(Model, String...)}: {@code Keyed.route(lr, "a", "b")}. */
  public static Route route(Model model, String... keys) {
    return Route.of(model, keys);
  }

  /** This router with one more route: {@code keys} go to {@code model}. */
  public Keyed withRoute(Model model, String... keys) {
    List<Route> more = new ArrayList<>(routes);
    more.add(Route.of(model, keys));
    return new Keyed(name, List.copyOf(more), defaultModel, maxModelsPerWorker, shards, io);
  }

  /** The model for keys no route lists (without one, such elements become failures). */
  public Keyed withDefault(Model model) {
    if (model == null) {
      throw new IllegalArgumentException("withDefault: model must not be null");
    }
    return new Keyed(name, routes, model, maxModelsPerWorker, shards, io);
  }

  /** At most {@code max} models resident per worker process (at least 1). */
  public Keyed withMaxModelsPerWorker(int max) {
    if (max < 1) {
      throw new IllegalArgumentException("withMaxModelsPerWorker: must be at least 1, got " + max);
    }
    return new Keyed(name, routes, defaultModel, max, shards, io);
  }

  /**
   * Groups each route's elements into {@code shards} groups (1 to {@value #MAX_SHARDS}) instead of
   * the default, so one route's work can run on up to {@code shards} workers at once.
   *
   * <p>The default (this method not called; the spec then has no {@code shards} field) is 16 when
   * every model of the node fits {@link #withMaxModelsPerWorker(int) maxModelsPerWorker} (unset,
   * or at least the number of models): a worker process then loads each route's model at most
   * once however many shards it runs, so the node loads at most <i>worker processes x routes</i>
   * models. With a smaller bound the default is 1: each extra shard of a route could cost one
   * more load in a worker that also runs other routes. Elements go to shards in runs of the
   * route's {@code maxBatchSize} (a shard gets whole batches), so a route with fewer elements
   * than one batch per bundle uses one shard per bundle.
   *
   * @throws IllegalArgumentException if {@code shards} is below 1 or above {@value #MAX_SHARDS}
   */
  public Keyed withShards(int shards) {
    if (shards < 1 || shards > MAX_SHARDS) {
      throw new IllegalArgumentException(
          "withShards: must be from 1 to " + MAX_SHARDS + ", got " + shards);
    }
    return new Keyed(name, routes, defaultModel, maxModelsPerWorker, shards, io);
  }

  @Override
  Keyed withIo(Io io) {
    return new Keyed(name, routes, defaultModel, maxModelsPerWorker, shards, io);
  }

  @Override
  public String name() {
    return name;
  }

  @Override
  public String kind() {
    return "keyed";
  }

  /** The routes, in order. */
  public List<Route> routes() {
    return routes;
  }

  /** The default model, or null. */
  public @Nullable Model defaultModel() {
    return defaultModel;
  }

  @Override
  List<Map.Entry<String, InferenceTransform<?>>> children() {
    List<Map.Entry<String, InferenceTransform<?>>> out = new ArrayList<>();
    for (int i = 0; i < routes.size(); i++) {
      out.add(Map.entry("routes[" + i + "].node", routes.get(i).model));
    }
    if (defaultModel != null) {
      out.add(Map.entry("default", defaultModel));
    }
    return out;
  }

  @Override
  void checkNode(String path, Problems problems) {
    if (routes.isEmpty()) {
      problems.add(path + ".routes", "needs at least one route");
    }
    Map<String, Integer> owner = new HashMap<>();
    for (int i = 0; i < routes.size(); i++) {
      for (String key : routes.get(i).keys) {
        Integer first = owner.putIfAbsent(key, i);
        if (first != null) {
          problems.add(
              path + ".routes[" + i + "].keys",
              "key '" + key + "' is already routed by routes[" + first + "]");
        }
      }
    }
  }

  @Override
  ObjectNode nodeJson() {
    ObjectNode out = Json.object();
    out.put("kind", kind());
    out.put("name", name);
    ArrayNode routesJson = out.putArray("routes");
    for (Route route : routes) {
      ObjectNode r = routesJson.addObject();
      ArrayNode keys = r.putArray("keys");
      route.keys.forEach(keys::add);
      r.set("node", route.model.nodeJson());
    }
    if (defaultModel != null) {
      out.set("default", defaultModel.nodeJson());
    }
    if (maxModelsPerWorker != null) {
      out.put("max_models_per_worker", maxModelsPerWorker);
    }
    if (shards != null) {
      out.put("shards", shards);
    }
    return out;
  }
}
