// A CDK app with every App Mesh construct kind of aws-cdk-lib (Mesh, VirtualNode,
// VirtualRouter with HTTP, HTTP/2, gRPC and TCP routes, VirtualService by router and by
// node, VirtualGateway with HTTP, HTTP/2 and gRPC gateway routes), nodes found by DNS and
// by Cloud Map. `node app.js OUTDIR` writes OUTDIR/GophersCdk.template.json, as `cdk
// synth` does.
const cdk = require('aws-cdk-lib');
const appmesh = require('aws-cdk-lib/aws-appmesh');
const cloudmap = require('aws-cdk-lib/aws-servicediscovery');

const outdir = process.argv[2] || 'cdk.out';
const app = new cdk.App({ outdir });
const stack = new cdk.Stack(app, 'GophersCdk', {
  env: { account: '000000000000', region: 'us-east-1' },
});

const mesh = new appmesh.Mesh(stack, 'Mesh', {
  meshName: 'gophers-cdk',
  egressFilter: appmesh.MeshFilterType.DROP_ALL,
});

const namespace = new cloudmap.HttpNamespace(stack, 'Namespace', { name: 'gophers.cdk' });
const distributorV2Service = namespace.createService('DistributorV2Service', {
  name: 'distributor-v2',
});

const healthCheck = appmesh.HealthCheck.http({
  healthyThreshold: 2,
  unhealthyThreshold: 3,
  interval: cdk.Duration.seconds(5),
  timeout: cdk.Duration.seconds(2),
  path: '/health',
});

const distributorV1 = mesh.addVirtualNode('DistributorV1', {
  virtualNodeName: 'distributor-v1',
  serviceDiscovery: appmesh.ServiceDiscovery.dns('distributor-v1.gophers.cdk'),
  listeners: [
    appmesh.VirtualNodeListener.http({
      port: 8080,
      healthCheck,
      timeout: { idle: cdk.Duration.seconds(300), perRequest: cdk.Duration.seconds(15) },
      outlierDetection: {
        baseEjectionDuration: cdk.Duration.seconds(10),
        interval: cdk.Duration.seconds(30),
        maxEjectionPercent: 50,
        maxServerErrors: 5,
      },
      connectionPool: { maxConnections: 1024, maxPendingRequests: 1024 },
    }),
  ],
  accessLog: appmesh.AccessLog.fromFilePath('/dev/stdout'),
});

const distributorV2 = mesh.addVirtualNode('DistributorV2', {
  virtualNodeName: 'distributor-v2',
  serviceDiscovery: appmesh.ServiceDiscovery.cloudMap(distributorV2Service),
  listeners: [appmesh.VirtualNodeListener.http({ port: 8080, healthCheck })],
});

const grpcNode = mesh.addVirtualNode('GrpcNode', {
  virtualNodeName: 'gopher-grpc',
  serviceDiscovery: appmesh.ServiceDiscovery.dns('grpc.gophers.cdk'),
  listeners: [
    appmesh.VirtualNodeListener.grpc({ port: 9090 }),
    appmesh.VirtualNodeListener.http2({ port: 9091 }),
    appmesh.VirtualNodeListener.tcp({ port: 9092 }),
  ],
});

const router = mesh.addVirtualRouter('Router', {
  virtualRouterName: 'distributor',
  listeners: [appmesh.VirtualRouterListener.http(8080)],
});
router.addRoute('Split', {
  routeName: 'distributor',
  routeSpec: appmesh.RouteSpec.http({
    weightedTargets: [
      { virtualNode: distributorV1, weight: 90 },
      { virtualNode: distributorV2, weight: 10 },
    ],
    match: {
      path: appmesh.HttpRoutePathMatch.startsWith('/'),
      headers: [appmesh.HeaderMatch.valueIs('x-gopher', 'yes')],
      method: appmesh.HttpRouteMethod.GET,
    },
    retryPolicy: {
      httpRetryEvents: [appmesh.HttpRetryEvent.GATEWAY_ERROR],
      tcpRetryEvents: [appmesh.TcpRetryEvent.CONNECTION_ERROR],
      retryAttempts: 2,
      retryTimeout: cdk.Duration.seconds(2),
    },
    timeout: { perRequest: cdk.Duration.seconds(15) },
  }),
  priority: 10,
});

const grpcRouter = mesh.addVirtualRouter('GrpcRouter', {
  virtualRouterName: 'grpc',
  listeners: [appmesh.VirtualRouterListener.grpc(9090)],
});
grpcRouter.addRoute('Grpc', {
  routeSpec: appmesh.RouteSpec.grpc({
    weightedTargets: [{ virtualNode: grpcNode, weight: 100, port: 9090 }],
    match: { serviceName: 'gophers.Gopher' },
  }),
});
const http2Router = mesh.addVirtualRouter('Http2Router', {
  virtualRouterName: 'http2',
  listeners: [appmesh.VirtualRouterListener.http2(9091)],
});
http2Router.addRoute('Http2', {
  routeSpec: appmesh.RouteSpec.http2({
    weightedTargets: [{ virtualNode: grpcNode, weight: 100, port: 9091 }],
    match: { path: appmesh.HttpRoutePathMatch.exactly('/gophers') },
  }),
});
const tcpRouter = mesh.addVirtualRouter('TcpRouter', {
  virtualRouterName: 'tcp',
  listeners: [appmesh.VirtualRouterListener.tcp(9092)],
});
tcpRouter.addRoute('Tcp', {
  routeSpec: appmesh.RouteSpec.tcp({
    weightedTargets: [{ virtualNode: grpcNode, weight: 100, port: 9092 }],
  }),
});

const distributor = new appmesh.VirtualService(stack, 'Distributor', {
  virtualServiceName: 'distributor.gophers.cdk',
  virtualServiceProvider: appmesh.VirtualServiceProvider.virtualRouter(router),
});
const grpcService = new appmesh.VirtualService(stack, 'GrpcService', {
  virtualServiceName: 'grpc.gophers.cdk',
  virtualServiceProvider: appmesh.VirtualServiceProvider.virtualRouter(grpcRouter),
});
const nodeService = new appmesh.VirtualService(stack, 'NodeService', {
  virtualServiceName: 'direct.gophers.cdk',
  virtualServiceProvider: appmesh.VirtualServiceProvider.virtualNode(grpcNode),
});

mesh.addVirtualNode('Requester', {
  virtualNodeName: 'requester',
  serviceDiscovery: appmesh.ServiceDiscovery.dns('requester.gophers.cdk'),
  listeners: [appmesh.VirtualNodeListener.http({ port: 8080 })],
  backends: [
    appmesh.Backend.virtualService(distributor),
    appmesh.Backend.virtualService(grpcService),
    appmesh.Backend.virtualService(nodeService),
  ],
});

const gateway = mesh.addVirtualGateway('Gateway', {
  virtualGatewayName: 'ingress',
  listeners: [appmesh.VirtualGatewayListener.http({ port: 9080 })],
  accessLog: appmesh.AccessLog.fromFilePath('/dev/stdout'),
});
gateway.addGatewayRoute('HttpGatewayRoute', {
  gatewayRouteName: 'distributor',
  routeSpec: appmesh.GatewayRouteSpec.http({
    routeTarget: distributor,
    match: { path: appmesh.HttpGatewayRoutePathMatch.startsWith('/distributor/') },
  }),
});
const http2Gateway = mesh.addVirtualGateway('Http2Gateway', {
  virtualGatewayName: 'ingress-h2',
  listeners: [appmesh.VirtualGatewayListener.http2({ port: 9081 })],
});
http2Gateway.addGatewayRoute('Http2GatewayRoute', {
  routeSpec: appmesh.GatewayRouteSpec.http2({
    routeTarget: distributor,
    match: { path: appmesh.HttpGatewayRoutePathMatch.startsWith('/h2/') },
  }),
});
const grpcGateway = mesh.addVirtualGateway('GrpcGateway', {
  virtualGatewayName: 'ingress-grpc',
  listeners: [appmesh.VirtualGatewayListener.grpc({ port: 9082 })],
});
grpcGateway.addGatewayRoute('GrpcGatewayRoute', {
  routeSpec: appmesh.GatewayRouteSpec.grpc({
    routeTarget: grpcService,
    match: { serviceName: 'gophers.Gopher' },
  }),
});

app.synth();
